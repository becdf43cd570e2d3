"""Semi-supervised node classification on Cora with a GCN (Kipf & Welling), ported to mlxkit.

The Flux version is GraphNeuralNetworks.jl's `examples/node_classification_cora.jl`; the model and
settings here are Kipf & Welling's (ICLR 2017): two graph convolutions with 16 hidden units,
dropout 0.5, Adam with learning rate 0.01, L2 weight decay 5e-4 on the first layer, up to 200
epochs with early stopping on the validation loss, row-normalised features. Training is
full-batch: every epoch is one step over the whole graph, and only the labelled nodes of the split
count.

The masked loss is plain mlxkit: the targets are the node labels with -1 for every node outside
the split, the loss averages the cross-entropy over the other nodes, and an `Accuracy` subclass
passes the same mask to the metric. Train, validation and test batches are the same graph with a
different target vector.

Run:
    python examples/flux/gcn_cora.py                  # ../shared/data/cora if present
    python examples/flux/gcn_cora.py --data DIR       # a folder with cora.content and cora.cites
    python examples/flux/gcn_cora.py --synthetic      # a generated Cora-sized graph
    python examples/flux/gcn_cora.py --quick          # seconds (CI smoke test)

Without Cora (a fresh clone has no `../shared`), a planted-partition graph with Cora's sizes and
class-dependent bag-of-words features stands in, and the run says so.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# isort: off
from mlxkit import Trainer  # first: importing mlxkit gives mlx.core a fast BLAS on Linux
import mlx.core as mx
import mlx.optimizers as optim

# isort: on
from mlxkit.callbacks import CSVLogger, EarlyStopping, LambdaCallback
from mlxkit.datasets import Cora, load_cora
from mlxkit.losses import cross_entropy
from mlxkit.metrics import Accuracy
from mlxkit.models import gcn, normalized_adjacency

REFERENCE_CORA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cora"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with cora.content and cora.cites")
    parser.add_argument("--synthetic", action="store_true", help="use a generated graph")
    parser.add_argument("--out", type=Path, default=Path("runs/flux_gcn_cora"))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="L2 on layer 1")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--patience", type=int, default=10, help="EarlyStopping on val_loss")
    parser.add_argument("--report-every", type=int, default=10, help="epochs between reports")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split and the weights")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.report_every = 5, 1
    return args


def planted_partition_graph(
    *,
    num_nodes: int = 2708,
    num_classes: int = 7,
    num_features: int = 1433,
    homophily: float = 0.7,
    topic_words: int = 4,
    seed: int = 0,
) -> Cora:
    """A Cora-sized stand-in: nodes of the same class link and share words more often.

    Each node starts 2 links (about 4 per node in all), a fraction `homophily` of them to its own
    class, and uses 18 words, `topic_words` of them from its class's 100 favourite words and the
    rest from the whole vocabulary: like Cora, neither the words nor the links alone classify
    every node, together they do well.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_nodes)
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    edges = []
    for node in range(num_nodes):
        for _ in range(2):
            pool = members[labels[node]] if rng.random() < homophily else np.arange(num_nodes)
            edges.append(sorted((node, int(rng.choice(pool)))))
    edges = np.unique(np.array(edges, dtype=np.int64), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    topics = [rng.choice(num_features, 100, replace=False) for _ in range(num_classes)]
    features = np.zeros((num_nodes, num_features), dtype=np.float32)
    for node in range(num_nodes):
        own = rng.choice(topics[labels[node]], topic_words)
        features[node, np.concatenate([own, rng.choice(num_features, 18 - topic_words)])] = 1.0
    names = tuple(f"class_{c}" for c in range(num_classes))
    ids = tuple(str(i) for i in range(num_nodes))
    return Cora(features, labels.astype(np.int64), edges, names, ids)


def load(args: argparse.Namespace) -> tuple[Cora, bool]:
    """The graph, and whether it is the real Cora."""
    folder = args.data
    if folder is None and not args.synthetic and REFERENCE_CORA.is_dir():
        folder = REFERENCE_CORA
    if folder is not None:
        print(f"Cora from {folder}")
        return load_cora(folder), True
    reason = "--synthetic" if args.synthetic else "No Cora folder (pass --data for the real one)"
    print(f"{reason}: a generated planted-partition graph with Cora's sizes")
    return planted_partition_graph(seed=args.seed), False


def masked_cross_entropy(logits: mx.array, labels: mx.array) -> mx.array:
    """Mean cross-entropy over the labelled nodes; a label of -1 marks a node to leave out."""
    mask = labels >= 0
    losses = cross_entropy(logits, mx.maximum(labels, 0), reduction="none")
    return mx.sum(mx.where(mask, losses, 0.0)) / mx.maximum(mx.sum(mask), 1)


class MaskedAccuracy(Accuracy):
    """`Accuracy` over the labelled nodes only (label -1: not in this split)."""

    def update(self, outputs, targets, mask=None):
        super().update(outputs, mx.maximum(targets, 0), mask=targets >= 0)


def split_targets(labels: np.ndarray, nodes: np.ndarray) -> mx.array:
    """The labels of `nodes`, and -1 everywhere else."""
    targets = np.full(len(labels), -1, dtype=np.int32)
    targets[nodes] = labels[nodes]
    return mx.array(targets)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cora, real = load(args)
    split = cora.split(seed=args.seed)
    print(
        f"{cora.num_nodes} nodes, {len(cora.edges)} edges, {cora.num_classes} classes; split "
        f"{len(split.train)} train / {len(split.validation)} validation / {len(split.test)} test"
    )

    # Kipf & Welling row-normalise the bag-of-words features.
    features = cora.features / np.maximum(cora.features.sum(axis=1, keepdims=True), 1)
    graph = (mx.array(features), normalized_adjacency(cora.edges, cora.num_nodes))

    def batch(nodes):  # the whole graph; only the targets differ between splits
        return [(graph, split_targets(cora.labels, nodes))]

    mx.random.seed(args.seed)  # the initial weights
    model = gcn(
        in_features=cora.features.shape[1],
        hidden=args.hidden,
        num_classes=cora.num_classes,
        dropout=args.dropout,
    )

    def loss(logits, labels):
        # Kipf & Welling decay only the first layer's weights, as TF's l2_loss: sum(w^2) / 2.
        decay = args.weight_decay * mx.sum(mx.square(model.gc1.weight)) / 2
        return masked_cross_entropy(logits, labels) + decay

    trainer = Trainer(
        model,
        optim.Adam(learning_rate=args.learning_rate),
        loss=loss,
        metrics=[MaskedAccuracy()],
    )

    def report(epoch, logs):
        if (epoch + 1) % args.report_every == 0 or epoch == 0:
            print(
                f"Epoch {epoch + 1:3d}  train loss {logs['loss']:.4f} acc {logs['accuracy']:.4f}"
                f"  val loss {logs['val_loss']:.4f} acc {logs['val_accuracy']:.4f}",
                flush=True,
            )

    stop = EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True)
    start = time.perf_counter()
    history = trainer.fit(
        batch(split.train),
        validation_data=batch(split.validation),
        epochs=args.epochs,
        callbacks=[stop, CSVLogger(args.out / "log.csv"), LambdaCallback(on_epoch_end=report)],
        verbose=0,  # one step per epoch: `report` prints every --report-every epochs instead
        seed=args.seed,
    )
    seconds = time.perf_counter() - start
    epochs = len(history.epoch)

    test = trainer.evaluate(batch(split.test), return_dict=True)
    reference = "; Kipf & Welling report 0.815 on Cora" if real else ""
    print(
        f"Test accuracy on {len(split.test)} nodes: {test['accuracy']:.4f} after {epochs} epochs "
        f"({seconds:.1f} s{reference})"
    )
    model.save_weights(str(args.out / "gcn.safetensors"))
    with open(args.out / "evaluation.json", "w") as f:
        json.dump({"test": test, "epochs": epochs, "seconds": seconds}, f, indent=2)
    print(f"Everything is in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
