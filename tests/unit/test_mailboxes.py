"""Which assignee addresses may receive events (issue 11, item 17)."""

import pytest

from common.errors import ConfigError
from common.mailboxes import ANY_MAILBOX, MailboxPolicy
from common.settings import load_settings


@pytest.mark.parametrize(
    "address",
    [
        "alice@contoso.com",
        "Alice.Smith@Contoso.COM",
        "o'brien+projects@eu.contoso.com",
        "a_b-c@xn--mller-kva.de",
        " padded@contoso.com ",  # PWA's value, stripped
    ],
)
def test_an_ordinary_address_is_accepted(address):
    assert ANY_MAILBOX.refusal(address) is None


@pytest.mark.parametrize(
    "address",
    [
        "",
        "alice",
        "alice@",
        "@contoso.com",
        "alice@contoso",  # no dot: not an Internet domain
        "alice@@contoso.com",
        "alice@contoso.com;mallory@outside.example",  # a list, not an address
        "Alice <alice@contoso.com>",
        "alice smith@contoso.com",
        "alice..smith@contoso.com",
        ".alice@contoso.com",
        "alice@-contoso.com",
        "alice@contoso..com",
        "alice@[10.0.0.1]",
        '"alice"@contoso.com',
        "jürgen@contoso.de",  # Graph addresses users by ASCII name
        "a" * 65 + "@contoso.com",
        "alice@" + "a" * 250 + ".com",
    ],
)
def test_a_malformed_address_is_refused(address):
    refusal = ANY_MAILBOX.refusal(address)
    assert refusal is not None and refusal.code == "invalid_email_address"
    assert refusal.failure_code == "InvalidEmailAddress"


def test_with_an_allow_list_only_its_domains_receive_events():
    policy = MailboxPolicy(frozenset({"contoso.com", "fabrikam.com"}))
    assert policy.refusal("alice@contoso.com") is None
    assert policy.refusal("BOB@Fabrikam.com") is None
    for address in ("mallory@outside.example", "eve@eu.contoso.com", "eve@contoso.com.evil"):
        refusal = policy.refusal(address)
        assert refusal is not None and refusal.code == "mailbox_domain_not_allowed", address
        assert refusal.failure_code == "MailboxDomainNotAllowed"
        assert address.split("@")[1].lower() in refusal.reason
    assert policy.refusal("not an address").code == "invalid_email_address"


def test_the_allow_list_setting():
    settings = load_settings({"PWASYNC_MAILBOX_DOMAINS": " Contoso.com, @fabrikam.com ,"})
    assert MailboxPolicy.from_settings(settings).domains == {"contoso.com", "fabrikam.com"}
    assert MailboxPolicy.from_settings(load_settings({})).domains == frozenset()
    with pytest.raises(ConfigError) as caught:
        load_settings({"PWASYNC_MAILBOX_DOMAINS": "contoso.com,not a domain"})
    assert "PWASYNC_MAILBOX_DOMAINS" in str(caught.value)


def test_an_entra_object_id_is_a_mailbox_unless_domains_are_listed():
    object_id = "1e358f7e-faa0-5a8b-ba18-903a5f3cd24c"
    assert MailboxPolicy().refusal(object_id) is None
    refusal = MailboxPolicy(frozenset({"contoso.com"})).refusal(object_id)
    assert refusal is not None and refusal.code == "mailbox_domain_not_allowed"
    assert "object id" in refusal.reason
    assert MailboxPolicy().refusal(object_id.upper()).code == "invalid_email_address"
