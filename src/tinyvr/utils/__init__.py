"""tinyvr.utils"""
