"""tinyvr.eval"""
