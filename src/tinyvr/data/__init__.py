"""tinyvr.data"""
