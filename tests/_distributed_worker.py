"""Worker for tests/test_distributed.py, run under `mlx.launch -n 2 --backend ring`.

Usage: python _distributed_worker.py OUT_DIR EPOCHS [resume|die]
Trains the shared tiny problem, then writes this rank's weights and history to OUT_DIR.
"""

import json
import os
import sys

import mlxkit  # noqa: F401  (loads the fast BLAS before mlx.core)
from mlxkit import Trainer
from mlxkit.callbacks import LambdaCallback, ModelCheckpoint

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

sys.path.insert(0, os.path.dirname(__file__))
from distributed_problem import BATCH_PER_RANK, make_data, make_model

out, epochs, mode = sys.argv[1], int(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "")
group = mx.distributed.init()
rank = group.rank()

# Record every safetensors write this rank makes, to prove only rank 0 writes checkpoints.
original_save = mx.save_safetensors


def recording_save(path, arrays, *args, **kwargs):
    with open(os.path.join(out, f"writes-rank{rank}.txt"), "a") as f:
        f.write(path + "\n")
    return original_save(path, arrays, *args, **kwargs)


mx.save_safetensors = recording_save

x, y = make_data()
model = make_model(seed=rank)  # different seeds: the Trainer must synchronise the start
trainer = Trainer(model, optim.SGD(learning_rate=0.1), "cross_entropy", ["accuracy"])
callbacks = [ModelCheckpoint(os.path.join(out, "ckpt"))]
if mode == "die":

    def die(batch, logs):
        if rank == 1 and trainer.global_step == 6:
            os._exit(7)

    callbacks.append(LambdaCallback(on_train_batch_end=die))
history = trainer.fit(
    x,
    y,
    batch_size=BATCH_PER_RANK,
    epochs=epochs,
    shuffle=False,
    verbose=0,
    validation_data=(x[:40], y[:40]),
    callbacks=callbacks,
    resume_from=os.path.join(out, "ckpt") if mode == "resume" else None,
)
mx.eval(model.parameters())
original_save(
    os.path.join(out, f"weights-rank{rank}.safetensors"), dict(tree_flatten(model.parameters()))
)
with open(os.path.join(out, f"history-rank{rank}.json"), "w") as f:
    json.dump(history.history, f)
