"""Ports keras/src/callbacks/csv_logger_test.py to mlxkit's `CSVLogger`."""

from __future__ import annotations

import csv
import re

from mlxkit.callbacks import CSVLogger, TerminateOnNaN

import numpy as np
import pytest

from tests.keras_parity.common import (
    compiled,
    dense_stack,
    keras_test_data,
    to_categorical,
    uniform,
)
from tests.keras_parity.test_terminate_on_nan import exploding_trainer

BATCH_SIZE = 4


def make_model():
    return compiled(
        dense_stack(3, [2, 1], activation="relu", seed=1337),
        loss="mse",
        optimizer="sgd",
        metrics=["mse"],
    )


@pytest.fixture
def data():
    x_train, y_train = uniform(10, 3, seed=0), uniform(10, 1, seed=1)
    x_test, y_test = uniform(10, 3, seed=2), uniform(10, 1, seed=3)
    return dict(
        x=x_train,
        y=y_train,
        batch_size=BATCH_SIZE,
        validation_data=(x_test, y_test),
        verbose=0,
    )


# Ports keras/src/callbacks/csv_logger_test.py::CSVLoggerTest::test_CSVLogger
def test_csv_logger(tmp_path, data):
    filepath = tmp_path / "log.tsv"
    sep = "\t"

    # Case 1: a new file with the given separator.
    make_model().fit(callbacks=[CSVLogger(filepath, separator=sep)], epochs=1, **data)
    assert filepath.exists()
    assert csv.Sniffer().sniff(filepath.read_text()).delimiter == sep

    # Case 2: append to the existing file, without a second header.
    trainer = make_model()
    callbacks = [CSVLogger(filepath, separator=sep, append=True)]
    trainer.fit(callbacks=callbacks, epochs=1, **data)
    # Case 3: the same CSVLogger object again.
    trainer.fit(callbacks=callbacks, epochs=2, **data)
    lines = filepath.read_text().splitlines(keepends=True)
    # Keras's rows have 5 fields (epoch, loss, mse, val_loss, val_mse); mlxkit's also hold its
    # extra History keys (learning_rate, samples_per_second, memory): every row as wide as the
    # header.
    header = lines[0].rstrip("\n").split(sep)
    assert {"epoch", "loss", "mse", "val_loss", "val_mse"} <= set(header)
    for line in lines:
        assert line.count(sep) == len(header) - 1
    assert len(lines) == 5
    assert len(re.findall("epoch", " ".join(lines))) == 1
    filepath.unlink()

    # Case 4: val_loss is logged at the validation frequency, "NA" in the other rows.
    callbacks = [CSVLogger(filepath, separator=sep)]
    history = make_model().fit(callbacks=callbacks, validation_freq=3, epochs=5, **data)
    with open(filepath, newline="") as f:
        rows = list(csv.DictReader(f, delimiter=sep))
    assert len(rows) == 5
    for index, row in enumerate(rows, 1):
        assert "val_loss" in row
        if index == 3:
            assert row["val_loss"] == str(history.history["val_loss"][0])
        else:
            assert row["val_loss"] == "NA"


# Ports keras/src/callbacks/csv_logger_test.py::CSVLoggerTest::test_stop_training_csv
def test_stop_training_csv(tmp_path):
    csv_logfile = tmp_path / "csv_logger.csv"
    (x_train, y_train), (x_test, y_test) = keras_test_data(
        train_samples=10, test_samples=10, input_dims=3, num_classes=2, seed=1337
    )
    history = exploding_trainer().fit(
        x_train,
        to_categorical(y_train, 2),
        batch_size=BATCH_SIZE,
        validation_data=(x_test, to_categorical(y_test, 2)),
        callbacks=[TerminateOnNaN(), CSVLogger(csv_logfile)],
        epochs=20,
        verbose=0,
    )
    loss = history.history["loss"]
    assert len(loss) == 1
    assert np.isnan(loss[0]) or np.isinf(loss[0])
    with open(csv_logfile) as f:
        values = [row for row in csv.reader(f) if row]
    assert "nan" in values[-1], "NaN not logged in CSV Logger."
