"""The Streamlit marts dashboard."""
