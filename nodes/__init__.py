"""ComfyUI nodes: thin adapters between ComfyUI types and the echomimic_core API."""

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
