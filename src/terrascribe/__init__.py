"""terrascribe: remote-sensing vision-language data and models.

Import the submodule you need (``terrascribe.shards``, ``terrascribe.models``...): importing the
package itself stays light and never loads torch.
"""

__version__ = "0.1.0"
