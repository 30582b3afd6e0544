"""Billing: prices, budgets, corrections and statements; the rules that must hold for every client live in SQL."""
