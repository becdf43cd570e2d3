"""Worker for tests/test_distributed.py, run under `mlx.launch -n 2 --backend ring`.

Usage: python _distributed_worker.py OUT_DIR EPOCHS [resume|die|stream|list-resume]
Trains the shared tiny problem, then writes this rank's weights and history to OUT_DIR.

- `stream`: trains on an `mlxkit.data.Stream` that this script shards itself; also writes the
  global step and the samples this rank trained on.
- `list-resume`: trains on a list of batches, writing a checkpoint mid-epoch; then a fresh trainer
  resumes from it; writes both runs' weights.
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


def save_weights(model, name):
    mx.eval(model.parameters())
    original_save(os.path.join(out, name), dict(tree_flatten(model.parameters())))


if mode == "stream":
    from mlxkit.data import Stream

    stream = Stream(
        {"x": x, "y": y}, batch_size=BATCH_PER_RANK, shuffle=False, shard=(rank, group.size())
    )
    trainer = Trainer(
        make_model(seed=rank),
        optim.SGD(learning_rate=0.1),
        "cross_entropy",
        inputs="x",
        targets="y",
    )
    seen = []
    count = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(trainer.samples_seen()))
    trainer.fit(stream, epochs=epochs, verbose=0, callbacks=[count])
    save_weights(trainer.model, f"weights-rank{rank}.safetensors")
    with open(os.path.join(out, f"stream-rank{rank}.json"), "w") as f:
        json.dump({"global_step": trainer.global_step, "samples": seen, "shard": stream.shard}, f)
    sys.exit(0)

if mode == "list-resume":
    batches = [(x[i : i + BATCH_PER_RANK], y[i : i + BATCH_PER_RANK]) for i in range(0, 64, 8)]
    checkpoint = os.path.join(out, "mid")

    def save_mid_epoch(batch, logs):
        if trainer.global_step == 5:  # epoch 1 (0-based), after its first batch
            trainer.save_checkpoint(checkpoint)

    trainer = Trainer(make_model(seed=rank), optim.Adam(learning_rate=0.01), "cross_entropy")
    trainer.fit(
        batches,
        epochs=epochs,
        verbose=0,
        callbacks=[LambdaCallback(on_train_batch_end=save_mid_epoch)],
    )
    save_weights(trainer.model, f"straight-rank{rank}.safetensors")
    mx.eval(mx.distributed.all_sum(mx.array(1), group=group))  # rank 0 has written `mid`
    resumed = Trainer(make_model(seed=7), optim.Adam(learning_rate=0.01), "cross_entropy")
    steps = []
    resumed.fit(
        batches,
        epochs=epochs,
        verbose=0,
        resume_from=checkpoint,
        callbacks=[LambdaCallback(on_train_batch_begin=lambda batch, logs: steps.append(batch))],
    )
    save_weights(resumed.model, f"resumed-rank{rank}.safetensors")
    with open(os.path.join(out, f"resumed-batches-rank{rank}.json"), "w") as f:
        json.dump(steps, f)
    sys.exit(0)

model = make_model(seed=rank)  # different seeds: the Trainer must synchronise the start
trainer = Trainer(model, optim.SGD(learning_rate=0.1), "cross_entropy", ["accuracy"])
callbacks = [ModelCheckpoint(os.path.join(out, "ckpt"))]
if mode == "die":

    def die(batch, logs):
        # Rank 1 vanishes mid-epoch. Exit status 0: on a failure status mlx.launch terminates
        # the other ranks at once, racing rank 0's own report of the broken collective.
        if rank == 1 and trainer.global_step == 6:
            os._exit(0)

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
