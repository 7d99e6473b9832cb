"""The command line's interpreter policy (echomimic_core/commands/process.py): only a process the CLI owns
freezes the GC heap; an in-process caller (a test, a host application) is left alone."""

import gc

from echomimic_core.commands import process


def test_freeze_after_imports_freezes_the_heap():
    before = gc.get_freeze_count()
    try:
        process.freeze_after_imports()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()  # this pytest process is not the CLI's


def test_in_process_main_does_not_freeze(tmp_path, fixtures, monkeypatch):
    from echomimic_core.__main__ import main

    calls = []
    monkeypatch.setattr(process, "freeze_after_imports", lambda: calls.append("freeze"))
    args = ["demo", "--models", str(fixtures / "weights"), "--width", "32", "--height", "32", "--steps", "1",
            "--max-frames", "12", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a.mp4")]) == 0
    assert calls == []
    assert main(args + ["--out", str(tmp_path / "b.mp4")], owns_process=True) == 0
    assert calls == ["freeze"]
