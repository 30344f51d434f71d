"""load_run: a run's model in evaluation mode with the preprocessing it was trained with."""

import json
import shutil

import numpy as np
import pytest

import normlab
from normlab.data import load_dataset
from normlab.train import load_run, load_tensors
from normlab.train.evaluation import confusion_matrix, evaluate_predictions


def test_load_run_reproduces_the_test_accuracy_training_measured(trained_run, toy_fashion_session):
    run = normlab.load_run(trained_run)
    assert not run.model.training and not any(m.training for m in run.model.modules())
    assert run.input_shape == (1, 28, 28) and run.classes[0] == "T-shirt/top" and len(run.classes) == 10
    test = load_dataset("fashion-mnist", toy_fashion_session, download=False)
    history = json.loads((trained_run / "history.json").read_text())
    assert float(np.mean(run.predict(test.x_test) == test.y_test)) == history["test_acc"]
    assert run.weights["epoch"] in (1, 2)


def test_probabilities_are_a_softmax_of_the_scores(trained_run, toy_fashion_session):
    run = load_run(trained_run)
    images = load_dataset("fashion-mnist", toy_fashion_session, download=False).x_test[:7]
    p = run.predict_proba(images)
    assert p.shape == (7, 10) and np.allclose(p.sum(axis=1), 1, atol=1e-12)
    scores = run.scores(run.preprocess(images)).astype(np.float64)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, expected / expected.sum(axis=1, keepdims=True), rtol=1e-12)
    assert np.array_equal(p.argmax(axis=1), run.predict(images))
    assert np.array_equal(run.predict(images.astype(np.float32) / 255), run.predict(images))  # floats in [0, 1]


def test_a_run_without_preprocessing_json_draws_the_same_standardization(trained_run, toy_fashion_session, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(trained_run, old)
    (old / "preprocessing.json").unlink()
    recorded, redrawn = load_run(trained_run), load_run(old, data_dir=toy_fashion_session, download=False)
    assert np.array_equal(recorded.standardizer.mean, redrawn.standardizer.mean)
    assert np.array_equal(recorded.standardizer.std, redrawn.standardizer.std)
    assert recorded.classes == redrawn.classes and recorded.input_shape == redrawn.input_shape


def test_last_weights_come_from_the_checkpoint(trained_run):
    run = load_run(trained_run, weights="last")
    arrays, meta = load_tensors(trained_run / "checkpoint.safetensors")
    assert np.array_equal(run.model.state_dict()["1.weight"], arrays["model.1.weight"])
    assert run.weights["epoch"] == meta["epochs_done"] == 2


def test_load_run_errors_name_the_directory_or_option(trained_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json there"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="weights must be 'best' or 'last', got 'first'"):
        load_run(trained_run, weights="first")
    with pytest.raises(ValueError, match=r"images must be \(N, 1, 28, 28\), got shape \(2, 28, 28\)"):
        load_run(trained_run).predict(np.zeros((2, 28, 28), np.uint8))


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    counts = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    result = evaluate_predictions(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), ("a", "b", "c"))
    assert result.accuracy == 4 / 6
    np.testing.assert_allclose(result.per_class_accuracy, [0.5, 1.0, 2 / 3])
    assert result.table().splitlines()[-1].split() == ["all", "6", "4", "0.6667"]
    with pytest.raises(ValueError, match=r"y_pred must be in \[0, 3\), got 3..3"):
        confusion_matrix(np.array([0]), np.array([3]), 3)
