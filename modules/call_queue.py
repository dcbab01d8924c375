"""A1111's `modules.call_queue` for extensions: a thin forward to `modules/ui/a1111_call_queue.py`."""
from modules.ui.a1111_call_queue import (queue_lock, wrap_gradio_call, wrap_gradio_gpu_call,  # noqa: F401
                                         wrap_queued_call)


def __getattr__(name: str):
    from modules.addons.missing_names import missing_name

    raise missing_name("modules.call_queue", name)
