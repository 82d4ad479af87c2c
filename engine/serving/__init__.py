"""Frontends over the engine core: the OpenAI-compatible HTTP server and the LangChain chat model.

The only engine modules that import web or LangChain code; nothing in the core imports them.
"""
