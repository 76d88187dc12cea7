"""The re-ranking stage: CatBoost over (user, candidate) feature rows."""

from __future__ import annotations

import numpy as np
from catboost import CatBoost, FeaturesData, Pool

from stages.feature_view import FeatureNames


class Ranker:
    """A trained CatBoost model and the feature columns it was trained on."""

    def __init__(self, model: CatBoost, names: FeatureNames) -> None:
        self.model = model
        self.names = names

    @staticmethod
    def data(names: FeatureNames, numeric: np.ndarray, categorical: np.ndarray) -> FeaturesData:
        """CatBoost's zero-copy input: numeric block first, categorical after."""
        return FeaturesData(
            num_feature_data=np.ascontiguousarray(numeric, dtype=np.float32),
            cat_feature_data=categorical if categorical.shape[1] else None,
            num_feature_names=list(names.numeric),
            cat_feature_names=list(names.categorical) if categorical.shape[1] else None,
        )

    def score(self, numeric: np.ndarray, categorical: np.ndarray, threads: int = 1) -> np.ndarray:
        """Raw ranking scores, higher is better.

        One thread by default: the service scales with workers, not threads.
        """
        if len(numeric) == 0:
            return np.empty(0, dtype=np.float32)
        data = self.data(self.names, numeric, categorical)
        return self.model.predict(data, prediction_type="RawFormulaVal", thread_count=threads).astype(np.float32)

    def contributions(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Per-row SHAP values (rows x features, the expected value dropped): what each feature added to a score.

        ``NoPreCalc``: for the few rows of one answer, skipping CatBoost's per-model
        precomputation is what keeps this under a millisecond.
        """
        if len(numeric) == 0:
            return np.empty((0, len(self.names.all)), dtype=np.float32)
        pool = Pool(self.data(self.names, numeric, categorical))
        shap = self.model.get_feature_importance(pool, type="ShapValues", shap_mode="NoPreCalc", thread_count=1)
        return np.asarray(shap, dtype=np.float32)[:, :-1]
