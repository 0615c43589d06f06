//! Helpers for the records' `into_owned`.

use std::borrow::Cow;

pub(crate) fn owned(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

pub(crate) fn owned_extras(
    extra: Vec<(Cow<'_, str>, Cow<'_, str>)>,
) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    extra
        .into_iter()
        .map(|(k, v)| (owned(k), owned(v)))
        .collect()
}
