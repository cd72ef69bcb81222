"""The `make bench` harness: targets, scenarios, load driver, results and charts."""
