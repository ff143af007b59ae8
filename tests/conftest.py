import sys
from pathlib import Path

import torch

# the tiny-model builders are plain modules next to the tests
sys.path.insert(0, str(Path(__file__).parent))

# tiny models gain nothing from intra-op threads, and thread spinning slows them badly on a busy machine
torch.set_num_threads(1)
