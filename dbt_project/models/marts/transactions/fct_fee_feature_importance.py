"""What drives fees: impurity importance of a random forest predicting fee_usd per transaction."""

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import r2_score

FEATURES = ["amount_usd", "leverage", "hour_of_day", "day_of_week", "tx_type", "token_symbol"]
CATEGORICAL = ["tx_type", "token_symbol"]
COLUMNS = {
    "feature": "string",
    "importance": "float64",
    "importance_rank": "int64",
    "model_r2_holdout": "float64",
    "training_rows": "int64",
}
# A fixed sample and seed keep the build fast and its output identical run to run.
SAMPLE_ROWS = 20_000
SEED = 42


def feature_importance(transactions: pd.DataFrame) -> pd.DataFrame:
    data = transactions.dropna(subset=["amount_usd", "fee_usd"])
    if len(data) < 50:
        return pd.DataFrame(columns=list(COLUMNS)).astype(COLUMNS)
    data = data.sample(n=min(SAMPLE_ROWS, len(data)), random_state=SEED)
    frame = data[FEATURES].copy()
    for column in CATEGORICAL:
        frame[column] = pd.Categorical(frame[column].astype(str)).codes
    frame = frame.astype("float64")
    # Amounts span orders of magnitude: their logarithm is what a tree splits on sensibly.
    frame["amount_usd"] = np.log1p(frame["amount_usd"])
    target = np.log1p(data["fee_usd"].to_numpy(dtype="float64"))
    holdout = np.arange(len(frame)) % 5 == 0
    forest = RandomForestRegressor(
        n_estimators=40, max_depth=10, min_samples_leaf=5, random_state=SEED, n_jobs=1
    )
    forest.fit(frame[~holdout], target[~holdout])
    r2 = float(r2_score(target[holdout], forest.predict(frame[holdout])))
    result = pd.DataFrame({"feature": FEATURES, "importance": forest.feature_importances_})
    result = result.sort_values(["importance", "feature"], ascending=[False, True])
    result["importance_rank"] = np.arange(1, len(result) + 1)
    result["model_r2_holdout"] = r2
    result["training_rows"] = int((~holdout).sum())
    return result.astype(COLUMNS)


def model(dbt, session):
    dbt.config(materialized="table")
    transactions = (
        dbt.ref("fct_transactions")
        .filter("is_completed")
        .project("amount_usd, fee_usd, leverage, hour_of_day, day_of_week, tx_type, token_symbol")
        .df()
    )
    return feature_importance(transactions)
