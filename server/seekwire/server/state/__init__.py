"""Stateful parts behind small interfaces: in-process by default, Redis when scaled out."""
