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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(ordinary_names_pass),
	    cmocka_unit_test(control_bytes_and_blanks_are_refused),
	    cmocka_unit_test(length_is_bounded_by_rfc1929),
	    cmocka_unit_test(passwords_need_a_byte_and_no_nul),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
