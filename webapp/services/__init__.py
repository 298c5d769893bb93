"""The service layer: the only code that reads or writes the database."""
