"""Component specs: how to start each real part and how to tell it is ready."""
