"""Great Expectations suites as code, one module per dataset or mart."""
