pytest_plugins = ["tests.support.fixtures", "tests.support.swtpm_fixtures"]
