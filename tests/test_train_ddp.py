"""scripts/train_ddp.py under torchrun: trains, checkpoints, resumes exactly."""

import pytest
import torch

from conftest import REPO, run_torchrun

SCRIPT = REPO / "scripts" / "train_ddp.py"


@pytest.mark.parametrize("loader, workers", [("streaming", 2), ("indexed", 0)])
def test_train_checkpoint_and_resume_with_two_ranks(built, tmp_path, loader, workers):
    checkpoint = tmp_path / "ckpt.pt"
    common = [str(built), "--loader", loader, "--batch-size", "8", "--epochs", "1", "--checkpoint", str(checkpoint),
              "--save-every", "2"]
    result = run_torchrun(SCRIPT, *common, "--workers", str(workers), "--max-steps", "5", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == 5 and (state["loader"]["epoch"], state["loader"]["position"]) == (0, 5 * 2 * 8)
    # again, with one worker less: continues at the saved position
    result = run_torchrun(SCRIPT, *common, "--workers", "1", "--max-steps", "3", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout and "step 5, epoch 0, position 80" in result.stdout
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == 8 and state["loader"]["position"] == 8 * 2 * 8
    assert "mean loss" in result.stdout
