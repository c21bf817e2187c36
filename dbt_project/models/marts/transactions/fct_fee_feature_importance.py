"""What drives fees: impurity importance of a random forest predicting fee_usd per transaction."""

import hashlib

import numpy as np
import pandas as pd

FEATURES = ["amount_usd", "leverage", "hour_of_day", "day_of_week", "tx_type", "token_symbol"]
CATEGORICAL = ["tx_type", "token_symbol"]
COLUMNS = {
    "feature": "string",
    "importance": "float64",
    "importance_rank": "int64",
    "model_r2_holdout": "float64",
    "training_rows": "int64",
    "training_sample_hash": "string",
}
# A fixed sample and seed keep the build fast and its output identical run to run.
SAMPLE_ROWS = 20_000
SEED = 42
SAMPLE_COLUMNS = "amount_usd, fee_usd, leverage, hour_of_day, day_of_week, tx_type, token_symbol"


def sample_positions(rows: int) -> np.ndarray:
    """Which of `rows` rows (in tx_id order) the sample takes, in sample order."""
    return np.random.default_rng(SEED).choice(rows, size=min(SAMPLE_ROWS, rows), replace=False)


def feature_importance(data: pd.DataFrame) -> pd.DataFrame:
    """Forest on the sampled rows (amount_usd and fee_usd not null), in sample order."""
    if len(data) < 50:
        return pd.DataFrame(columns=list(COLUMNS)).astype(COLUMNS)
    # Imported here: a build that keeps the last result never loads scikit-learn (about a second).
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.metrics import r2_score

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
    result = result.sort_values(["importance", "feature"], ascending=[False, True], ignore_index=True)
    result["importance_rank"] = np.arange(1, len(result) + 1)
    result["model_r2_holdout"] = r2
    result["training_rows"] = int((~holdout).sum())
    return result


def model(dbt, session):
    dbt.config(materialized="table")
    transactions = dbt.ref("fct_transactions").filter(
        "is_completed and amount_usd is not null and fee_usd is not null"
    )
    # DuckDB returns rows in no fixed order: the sample is drawn from the sorted tx_ids, and
    # only the sampled rows are fetched, in sample order.
    tx_ids = np.sort(transactions.project("tx_id").fetchnumpy()["tx_id"])
    sampled = tx_ids[sample_positions(len(tx_ids))]
    order = session.from_df(pd.DataFrame({"tx_id": sampled, "sample_order": np.arange(len(sampled))}))
    sample = (
        transactions.join(order, "tx_id").project(f"{SAMPLE_COLUMNS}, sample_order").order("sample_order")
    )
    data = sample.df()
    fingerprint = sample_hash(data)
    previous = previous_result(session, str(dbt.this))
    if previous is not None and (previous["training_sample_hash"] == fingerprint).all() and len(previous):
        # The same sample trains the same forest (fixed seed): keep it rather than fit it again.
        return previous.astype(COLUMNS)
    return feature_importance(data).assign(training_sample_hash=fingerprint).astype(COLUMNS)


def sample_hash(data: pd.DataFrame) -> str:
    """A fingerprint of the training sample: its values, row by row, in sample order."""
    rows = pd.util.hash_pandas_object(data, index=False).to_numpy()
    return hashlib.sha1(rows.tobytes()).hexdigest()


def previous_result(session, relation: str) -> pd.DataFrame | None:
    """This model's table from the last build, or None (first build, or built before the hash)."""
    try:
        previous = session.sql(f"select * from {relation}").df()
    except Exception:  # no table yet: the first build
        return None
    return previous if "training_sample_hash" in previous.columns else None
