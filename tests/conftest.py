"""Test-wide set-up.

Eight simulated CPU devices, so that sharded code can be compared with unsharded code on a laptop-class machine
(multi-device tests build their own meshes; everything else runs on device 0). This must happen before jax is
imported anywhere, hence at the top of conftest.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Tests never reach a model hub: every model is a local folder or built offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
