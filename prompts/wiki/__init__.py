"""The ReAct Wikipedia tool and its backends: the live API with its cache, and an offline corpus with its importers."""
from .importers import import_corpus
from .live import LiveWikipedia
from .markup import strip_wiki_markup
from .offline import OfflineCorpus
from .tool import NO_MORE_RESULTS, NO_PAGE, Page, WikiBackend, WikiTool, WikiUnavailable, split_sentences

__all__ = ["NO_MORE_RESULTS", "NO_PAGE", "LiveWikipedia", "OfflineCorpus", "Page", "WikiBackend", "WikiTool",
           "WikiUnavailable", "import_corpus", "split_sentences", "strip_wiki_markup"]
