"""One module per dialect (and one for profiles); each returns an ``APIRouter``."""
