"""The pod's HTTP side: the app in front of vLLM, access control, the offline
store and runner, live SLO windows and metrics.
"""
