"""Training inside the web UI (A1111's Train tab): the datasets and their captions, learning-rate schedules, and the
trainers (textual inversion, hypernetwork, LoRA, DreamBooth-LoRA, ControlNet) that run as jobs in the queue."""
