"""Classroom exercise checks: call one on your answer in a notebook and it tells you, in plain words, what is right or wrong."""

# notebooks 00-04
from .concepts import *  # noqa: F401,F403

# notebooks 05-06
from .finetune import *  # noqa: F401,F403

# notebook 07
from .beyond import *  # noqa: F401,F403
