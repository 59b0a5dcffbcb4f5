"""Constants shared by the model, the data pipeline and the trainers (values of the reference)."""

IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200  # placeholder id spliced out by the model (reference utils/constants.py)
IGNORE_INDEX = -100  # label value that carries no loss
EOS_TOKEN = "<|endoftext|>"  # EOS, PAD and end of turn, as in Qwen2.5
