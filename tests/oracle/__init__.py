"""Reference implementations kept only to check the code that replaced them."""
