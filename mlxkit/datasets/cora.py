"""The Cora citation graph (LINQS release): node features, labels, undirected edges, splits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CoraSplit:
    """Node indices (sorted int64 arrays) of a train / validation / test split.

    Example:
        >>> import numpy as np
        >>> from mlxkit.datasets import CoraSplit
        >>> split = CoraSplit(np.array([0, 3]), np.array([1]), np.array([2]))
        >>> len(split.train)
        2
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class Cora:
    """The Cora graph, as `load_cora` returns it.

    Attributes:
        features: `(num_nodes, 1433)` float32 binary bag-of-words.
        labels: `(num_nodes,)` int64 class indices into `class_names`.
        edges: `(num_edges, 2)` int64 undirected edges, each listed once with `i < j`, no self
            loops (5278 for the LINQS release).
        class_names: The class names, sorted alphabetically.
        paper_ids: The papers' ids in `cora.content`, in node order.

    Example:
        >>> from pathlib import Path
        >>> from mlxkit.datasets import load_cora
        >>> folder = Path("../shared/data/cora")
        >>> if folder.is_dir():  # the repository's reference data, when present
        ...     cora = load_cora(folder)
        ...     split = cora.split(seed=0)
        ...     assert len(split.train) == 20 * cora.num_classes
    """

    features: np.ndarray
    labels: np.ndarray
    edges: np.ndarray
    class_names: tuple[str, ...]
    paper_ids: tuple[str, ...]

    @property
    def num_nodes(self) -> int:
        """The number of papers."""
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    def split(
        self,
        seed: int = 0,
        *,
        train_per_class: int = 20,
        num_validation: int = 500,
        num_test: int = 1000,
    ) -> CoraSplit:
        """A seeded Planetoid-style split: `train_per_class` nodes of each class for training, then
        `num_validation` and `num_test` nodes drawn at random from the rest.

        Args:
            seed: The split is a pure function of the seed.
            train_per_class: Labelled training nodes per class.
            num_validation: Validation nodes.
            num_test: Test nodes.

        Returns:
            A `CoraSplit` of disjoint, sorted index arrays.

        Example:
            >>> import numpy as np
            >>> from mlxkit.datasets.cora import Cora
            >>> toy = Cora(np.zeros((6, 2), "float32"), np.array([0, 0, 0, 1, 1, 1]),
            ...            np.zeros((0, 2), "int64"), ("a", "b"), tuple("uvwxyz"))
            >>> s = toy.split(train_per_class=1, num_validation=2, num_test=2)
            >>> len(s.train), len(s.validation), len(s.test)
            (2, 2, 2)
        """
        for name, value in (
            ("seed", seed),
            ("train_per_class", train_per_class),
            ("num_validation", num_validation),
            ("num_test", num_test),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`{name}` must be an int >= 0. Received: {name}={value!r}")
        rng = np.random.default_rng(seed)
        train = []
        for label in range(self.num_classes):
            members = np.flatnonzero(self.labels == label)
            if len(members) < train_per_class:
                raise ValueError(
                    f"Class {self.class_names[label]!r} has {len(members)} nodes, fewer than "
                    f"train_per_class={train_per_class}."
                )
            train.append(rng.choice(members, train_per_class, replace=False))
        train_index = np.concatenate(train) if train else np.zeros(0, np.int64)
        rest = np.setdiff1d(np.arange(self.num_nodes), train_index)
        if num_validation + num_test > len(rest):
            raise ValueError(
                f"num_validation + num_test = {num_validation + num_test} exceeds the "
                f"{len(rest)} nodes left after training."
            )
        rest = rng.permutation(rest)
        return CoraSplit(
            train=np.sort(train_index).astype(np.int64),
            validation=np.sort(rest[:num_validation]).astype(np.int64),
            test=np.sort(rest[num_validation : num_validation + num_test]).astype(np.int64),
        )


def load_cora(path: str | os.PathLike) -> Cora:
    """Reads `cora.content` and `cora.cites` from the LINQS Cora release.

    Nodes keep the order of `cora.content`. Citations become undirected edges, listed once each
    (`i < j`), without self loops.

    Args:
        path: The folder holding `cora.content` and `cora.cites`.

    Returns:
        A `Cora`; `.split(seed)` draws a Planetoid-style split.

    Example:
        >>> from pathlib import Path
        >>> from mlxkit.datasets import load_cora
        >>> folder = Path("../shared/data/cora")
        >>> if folder.is_dir():  # the repository's reference data, when present
        ...     cora = load_cora(folder)
        ...     assert cora.features.shape == (2708, 1433) and len(cora.edges) == 5278
    """
    folder = Path(path)
    content, cites = folder / "cora.content", folder / "cora.cites"
    for required in (content, cites):
        if not required.is_file():
            raise FileNotFoundError(f"{required} is missing. Received: path={path!r}")

    ids, rows, names = [], [], []
    width = None
    with open(content) as lines:
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            if width is None:
                width = len(fields)
            if len(fields) != width or width < 3:
                raise ValueError(
                    f"{content} line {number} has {len(fields)} fields, expected {width} "
                    "(paper id, word flags, class label)."
                )
            ids.append(fields[0])
            rows.append(fields[1:-1])
            names.append(fields[-1])
    if not ids:
        raise ValueError(f"{content} holds no papers.")
    try:
        features = np.array(rows, dtype=np.float32)
    except ValueError:
        raise ValueError(f"{content} has non-numeric word features.") from None
    numeric = [name for name in names if _is_number(name)]
    if len(numeric) == len(names):
        raise ValueError(
            f"{content}: the last column should be the class label (a name such as "
            f"'Neural_Networks'), but it holds only numbers {sorted(set(numeric))[:5]}: the "
            f"label column is missing. Received: path={path!r}"
        )
    class_names = tuple(sorted(set(names)))
    labels = np.searchsorted(np.array(class_names), np.array(names)).astype(np.int64)
    node = {paper: i for i, paper in enumerate(ids)}
    if len(node) != len(ids):
        raise ValueError(f"{content} lists some paper ids more than once.")

    pairs: list[tuple[int, int]] = []
    with open(cites) as lines:
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{cites} line {number} should hold two paper ids: {line!r}")
            unknown = [f for f in fields if f not in node]
            if unknown:
                raise ValueError(f"{cites} line {number} cites unknown paper id(s) {unknown}.")
            pairs.append((node[fields[0]], node[fields[1]]))
    edges = np.sort(np.array(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    edges = np.unique(edges[edges[:, 0] != edges[:, 1]], axis=0)
    return Cora(features, labels, edges, class_names, tuple(ids))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
