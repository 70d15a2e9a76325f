"""Pure feature functions and the Feast feature repo."""
