import pytest
from django.core.exceptions import ImproperlyConfigured

from crucible.env import envbool, envchoice, envfloat, envhosts, envint, envlist, envrate, envstr


class TestEnvBool:
    @pytest.mark.parametrize("raw", ["1", "true", "YES", " on "])
    def test_true_spellings(self, raw):
        assert envbool("X", False, {"X": raw}) is True

    @pytest.mark.parametrize("raw", ["0", "false", "No", "off", ""])
    def test_false_spellings(self, raw):
        assert envbool("X", True, {"X": raw}) is False

    def test_missing_gives_the_default(self):
        assert envbool("X", True, {}) is True

    def test_a_typo_fails_loudly_naming_the_variable(self):
        with pytest.raises(ImproperlyConfigured, match="DEBUG='ture'"):
            envbool("DEBUG", False, {"DEBUG": "ture"})


class TestEnvInt:
    def test_parses_and_strips(self):
        assert envint("N", 1, {"N": " 42 "}) == 42

    def test_not_a_number_fails(self):
        with pytest.raises(ImproperlyConfigured, match="not an integer"):
            envint("N", 1, {"N": "4x"})

    def test_bounds_are_enforced(self):
        with pytest.raises(ImproperlyConfigured, match="below the minimum"):
            envint("N", 1, {"N": "0"}, minimum=1)
        with pytest.raises(ImproperlyConfigured, match="above the maximum"):
            envint("N", 1, {"N": "11"}, maximum=10)


class TestEnvFloat:
    def test_parses(self):
        assert envfloat("F", 1.0, {"F": "2.5"}) == 2.5

    @pytest.mark.parametrize("raw", ["abc", "nan", "inf"])
    def test_rejects_non_finite_and_garbage(self, raw):
        with pytest.raises(ImproperlyConfigured):
            envfloat("F", 1.0, {"F": raw})


class TestEnvList:
    def test_splits_on_commas(self):
        assert envlist("L", [], {"L": "a.example, b.example"}) == ["a.example", "b.example"]

    def test_empty_item_fails(self):
        with pytest.raises(ImproperlyConfigured, match="empty item"):
            envlist("L", [], {"L": "a,,b"})


class TestEnvHosts:
    def test_names_addresses_and_networks_come_back_canonical(self):
        raw = "Receiver.Internal., 127.0.0.1, 10.0.0.0/8, 192.168.1.7/24, FD00::/8, ::1"
        assert envhosts("H", [], {"H": raw}) == [
            "receiver.internal",
            "127.0.0.1/32",
            "10.0.0.0/8",
            "192.168.1.0/24",
            "fd00::/8",
            "::1/128",
        ]

    def test_unset_is_the_default_and_empty_is_nothing(self):
        assert envhosts("H", [], {}) == []
        assert envhosts("H", [], {"H": " "}) == []

    @pytest.mark.parametrize("raw", ["http://hooks.example", "hooks.example:8080", "10.0.0.0/33", "bad name", "a/b"])
    def test_anything_else_fails_loudly(self, raw):
        with pytest.raises(ImproperlyConfigured, match="not a host name, an IP address or a CIDR"):
            envhosts("H", [], {"H": raw})


class TestEnvChoice:
    def test_unknown_choice_fails(self):
        with pytest.raises(ImproperlyConfigured, match="not one of"):
            envchoice("MODE", "a", ["a", "b"], {"MODE": "c"})


class TestSecretsFromFiles:
    def test_value_is_read_from_the_file_named_by_NAME_FILE(self, tmp_path):
        secret = tmp_path / "secret"
        secret.write_text("s3cret\n")
        assert envstr("SECRET_KEY", None, {"SECRET_KEY_FILE": str(secret)}) == "s3cret"

    def test_the_variable_itself_wins_over_the_file(self, tmp_path):
        assert envstr("SECRET_KEY", None, {"SECRET_KEY": "direct", "SECRET_KEY_FILE": "/nonexistent"}) == "direct"

    def test_an_unreadable_file_fails_loudly(self):
        with pytest.raises(ImproperlyConfigured, match="cannot be read"):
            envstr("SECRET_KEY", None, {"SECRET_KEY_FILE": "/nonexistent/secret"})

    def test_a_required_variable_that_is_missing_fails(self):
        with pytest.raises(ImproperlyConfigured, match="required"):
            envstr("SECRET_KEY", environ={})


class TestEnvRate:
    @pytest.mark.parametrize(
        ("raw", "expected"), [("10/5m", (10, 300)), (" 3/h ", (3, 3600)), ("20/30s", (20, 30)), ("1/2d", (1, 172800))]
    )
    def test_count_per_period(self, raw, expected):
        assert envrate("R", "1/m", {"R": raw}) == expected

    def test_missing_gives_the_default(self):
        assert envrate("R", "5/15m", {}) == (5, 900)

    @pytest.mark.parametrize("raw", ["10", "10/5", "ten/m", "10/5y", "0/m", "10/0m", "-1/m", "10/²m"])
    def test_a_malformed_rate_fails_loudly_naming_the_variable(self, raw):
        with pytest.raises(ImproperlyConfigured, match="SIGNIN_IP_LIMIT="):
            envrate("SIGNIN_IP_LIMIT", "10/5m", {"SIGNIN_IP_LIMIT": raw})
