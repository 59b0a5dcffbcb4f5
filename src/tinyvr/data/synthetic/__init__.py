"""tinyvr.data.synthetic"""
