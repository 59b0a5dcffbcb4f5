"""tinyvr.model"""
