"""Developer tools shipped with the CLI: the demo, a tiny generated model and a
pod subprocess helper. Nothing at runtime imports them.
"""
