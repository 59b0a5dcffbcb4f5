"""tinyvr.rl"""
