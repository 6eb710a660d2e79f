"""`python -m lora_lab ...` runs the `lora-lab` command (and `accelerate launch -m lora_lab finetune ...`)."""

import sys

from .cli import main

sys.exit(main())
