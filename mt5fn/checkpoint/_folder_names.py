"""The names of the tokenizer files a checkpoint folder may hold.

They live in the checkpoint room because a save replaces all of them (a stale
``tokenizer.json`` would shadow a new ``spiece.model``) and the checkpoint room
sits below the tokenizer room, which reads and writes them through the
checkpoint's atomic writes and closed-world checks.
"""

SPIECE_NAME = "spiece.model"
TOKENIZER_JSON_NAME = "tokenizer.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
ADDED_TOKENS_NAME = "added_tokens.json"
# Every file a tokenizer directory may hold (a save replaces all of them).
TOKENIZER_FILES = (SPIECE_NAME, TOKENIZER_JSON_NAME, TOKENIZER_CONFIG_NAME, SPECIAL_TOKENS_MAP_NAME,
                   ADDED_TOKENS_NAME)
