//! Tab-separated fields with backslash escapes (`\t`, `\n`, `\r`, `\\`).
