"""tinyvr.recipes"""
