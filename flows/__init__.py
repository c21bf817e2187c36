"""binance-lakehouse: Prefect flows and the code they call."""
