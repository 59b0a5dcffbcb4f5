"""tinyvr.eval.tasks"""
