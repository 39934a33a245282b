"""Text evaluate: score the test texts with the network, the majority class and TF-IDF + logistic regression.

Inputs:  ``paths.split``/train.parquet (the baselines' training texts, not augmented) and test.parquet,
         ``paths.model``, ``paths.preprocessor`` (the tokeniser).
Outputs: ``paths.eval_metrics``, ``paths.eval_per_class``, ``paths.eval_plots`` (the classifiers' reports).
Params:  ``evaluate``, ``seed``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from pipeline.core.io import write_json
from pipeline.kinds.text.data import SCORING_BATCH, read_split, read_text_schema
from pipeline.kinds.text.tokenizer import TextTokenizer, label_codes, load_tokenizer
from pipeline.models import load_model
from pipeline.params import EvaluateParams, Paths
from pipeline.shared.reports import evaluate as metrics_of
from pipeline.shared.reports import write_classification_reports

log = logging.getLogger(__name__)
BASELINE = "tfidf_logreg"


def predict_texts(
    model: torch.nn.Module, tokenizer: TextTokenizer, texts: list[str], batch_size: int = SCORING_BATCH
) -> np.ndarray:
    """Class probabilities [N, K] for raw texts: the saved tokeniser, then the network, then softmax."""
    model.eval()
    with torch.no_grad():
        out = [
            torch.softmax(model(torch.from_numpy(tokenizer.transform(texts[i : i + batch_size]))), dim=1)
            for i in range(0, len(texts), batch_size)
        ]
    return torch.cat(out).numpy() if out else np.zeros((0, len(tokenizer.classes)), np.float32)


def tfidf_proba(
    train_texts: list[str],
    train_y: np.ndarray,
    test_texts: list[str],
    tokenizer: TextTokenizer,
    n_classes: int,
    cfg: EvaluateParams,
    seed: int,
) -> np.ndarray:
    """The bag-of-words baseline: TF-IDF of the tokeniser's own tokens (unigrams and bigrams seen twice,
    fitted on the training texts) and a multinomial logistic regression."""
    vectorizer = TfidfVectorizer(analyzer=lambda text: _ngrams(tokenizer.tokens(text)), min_df=2, sublinear_tf=True)
    model = LogisticRegression(max_iter=cfg.baseline_max_iter, C=4.0, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # capped on purpose by evaluate.baseline_max_iter
        model.fit(vectorizer.fit_transform(train_texts), train_y)
    proba = np.zeros((len(test_texts), n_classes))
    proba[:, model.classes_] = model.predict_proba(vectorizer.transform(test_texts))  # classes absent from training get 0
    return proba


def _ngrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def run(cfg: EvaluateParams, paths: Paths, seed: int) -> dict[str, Any]:
    """Score the test texts with the network and both baselines; write metrics and plot data."""
    tokenizer = load_tokenizer(paths.preprocessor)
    classes = tokenizer.classes
    schema = read_text_schema(paths.split)
    model = load_model(paths.model)
    train_texts, train_labels = read_split(paths.split, "train", schema)  # real texts: the baselines see no augmentation
    test_texts, test_labels = read_split(paths.split, "test", schema)
    train_y, test_y = label_codes(train_labels, classes), label_codes(test_labels, classes)
    proba = predict_texts(model, tokenizer, test_texts)
    baseline = tfidf_proba(train_texts, train_y, test_texts, tokenizer, len(classes), cfg, seed)
    metrics = metrics_of(proba, test_y, train_y, baseline, classes, cfg, baseline=BASELINE)
    write_json(paths.eval_metrics, metrics)
    write_classification_reports(test_y, proba, classes, cfg, paths)
    log.info(
        "test accuracy %.4f, macro F1 %.4f (TF-IDF + logistic regression %.4f / %.4f, majority %.4f / %.4f)",
        metrics["model"]["accuracy"],
        metrics["model"]["macro_f1"],
        metrics[f"baseline_{BASELINE}"]["accuracy"],
        metrics[f"baseline_{BASELINE}"]["macro_f1"],
        metrics["baseline_majority"]["accuracy"],
        metrics["baseline_majority"]["macro_f1"],
    )
    return metrics
