"""The bundled search spaces (YAML data), installed with ``hpo``: ``hpo search lr_wd`` finds them
from any folder."""
