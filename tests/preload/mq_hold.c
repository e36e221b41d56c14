/* mq_hold.c - keep a queue with messages open until told to go on (a line on stdin).
 *
 * Usage: mq_hold /NAME   Creates /NAME, sends "first" (prio 1) and "second" (prio 9),
 * prints "ready", waits for a line, receives both, prints them, unlinks /NAME.
 * Under the shim the test looks at MNT/NAME while it waits.
 */
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	struct mq_attr attr = {.mq_maxmsg = 5, .mq_msgsize = 32};
	mqd_t q = mq_open(argv[1], O_RDWR | O_CREAT | O_EXCL, 0640, &attr);
	if (q < 0 || mq_send(q, "first", 5, 1) < 0 || mq_send(q, "second", 6, 9) < 0) {
		perror("mq_hold");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	char line[16];
	if (fgets(line, sizeof line, stdin) == NULL)
		return 1;
	for (int i = 0; i < 2; i++) {
		char buffer[32];
		unsigned prio;
		ssize_t got = mq_receive(q, buffer, sizeof buffer, &prio);
		if (got < 0) {
			perror("mq_receive");
			return 1;
		}
		printf("%u %.*s\n", prio, (int)got, buffer);
	}
	mq_close(q);
	return mq_unlink(argv[1]) < 0;
}
