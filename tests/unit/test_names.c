/* names: what user names and passwords may hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../shared/names.h"

#define NAME_OK(s) assert_null(names_user_problem((s), sizeof(s) - 1))
#define NAME_BAD(s) assert_non_null(names_user_problem((s), sizeof(s) - 1))

static void ordinary_names_pass(void **state)
{
	(void)state;
	NAME_OK("alice");
	NAME_OK("a");
	NAME_OK("bob smith");
	NAME_OK("DOMAIN\\carol");
	NAME_OK("dave:x");  /* the file splits NAME:HASH at the last ':' */
	NAME_OK("#eve");    /* '#' is a comment only at the start of a line */
	NAME_OK("j\xc3\xbcrgen"); /* UTF-8 */
}

static void control_bytes_and_blanks_are_refused(void **state)
{
	(void)state;
	NAME_BAD("");
	NAME_BAD("evil\nadmin = x:y");
	NAME_BAD("cr\r");
	NAME_BAD("nul\0x");
	NAME_BAD("tab\tx");
	NAME_BAD("esc\x1b[31m");
	NAME_BAD("del\x7f");
	NAME_BAD(" lead");
	NAME_BAD("trail ");
}

static void length_is_bounded_by_rfc1929(void **state)
{
	(void)state;
	char n[257];
	memset(n, 'a', sizeof n);
	assert_null(names_user_problem(n, 255));
	assert_non_null(names_user_problem(n, 256));
	assert_null(names_password_problem(n, 255));
	assert_non_null(names_password_problem(n, 256));
}

static void passwords_need_a_byte_and_no_nul(void **state)
{
	(void)state;
	assert_non_null(names_password_problem("", 0));
	assert_non_null(names_password_problem("adminpw\0junk", 12));
	assert_null(names_password_problem("pa ss:#\n", 8));
}

#define U8(lit, left) names_utf8_len((const unsigned char *)(lit), (left))

static void utf8_sequences_are_measured(void **state)
{
	(void)state;
	assert_int_equal(U8("a", 1), 1);
	assert_int_equal(U8("\xc3\xa9", 2), 2);          /* U+00E9 */
	assert_int_equal(U8("\xe2\x82\xac", 3), 3);      /* U+20AC */
	assert_int_equal(U8("\xf0\x9f\x98\x80", 4), 4); /* U+1F600 */
	assert_int_equal(U8("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF */
}

static void invalid_utf8_is_refused(void **state)
{
	(void)state;
	assert_int_equal(U8("\x80", 1), 0);                 /* a stray continuation */
	assert_int_equal(U8("\xc0\xaf", 2), 0);            /* overlong '/' */
	assert_int_equal(U8("\xc1\xbf", 2), 0);            /* overlong */
	assert_int_equal(U8("\xe0\x80\xaf", 3), 0);        /* overlong */
	assert_int_equal(U8("\xf0\x80\x80\xaf", 4), 0);    /* overlong */
	assert_int_equal(U8("\xed\xa0\x80", 3), 0);        /* a surrogate */
	assert_int_equal(U8("\xf4\x90\x80\x80", 4), 0);    /* past U+10FFFF */
	assert_int_equal(U8("\xf5\x80\x80\x80", 4), 0);
	assert_int_equal(U8("\xff", 1), 0);
	assert_int_equal(U8("\xc3" "a", 2), 0);                /* no continuation */
	assert_int_equal(U8("\xe2\x82\xac", 2), 0);        /* cut short */
	assert_int_equal(U8("\xf0\x9f\x98\x80", 3), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(ordinary_names_pass),
	    cmocka_unit_test(control_bytes_and_blanks_are_refused),
	    cmocka_unit_test(length_is_bounded_by_rfc1929),
	    cmocka_unit_test(passwords_need_a_byte_and_no_nul),
	    cmocka_unit_test(utf8_sequences_are_measured),
	    cmocka_unit_test(invalid_utf8_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
