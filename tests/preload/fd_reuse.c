/* fd_reuse.c - queue descriptors closed, replaced and reused in every way a program can:
 * close(), dup(), dup2(), dup3(), close_range(), closefrom() and fork(). Each step sends
 * or receives on a descriptor number that a moment ago was another queue's, and prints
 * what every queue holds. The same on the kernel and under the shim: on a fastpath mount a
 * stale entry of the shim's descriptor table would put a message in the wrong queue.
 *
 * Usage: fd_reuse PREFIX   (queues /PREFIX-a, /PREFIX-b, /PREFIX-c; all unlinked at the end)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char names[3][300];

static mqd_t open_queue(int which)
{
	struct mq_attr attr = {.mq_maxmsg = 8, .mq_msgsize = 16};
	return mq_open(names[which], O_RDWR | O_CREAT | O_NONBLOCK, 0600, &attr);
}

/* Every queue's messages, taken out and put back, on fresh descriptors. */
static void show(const char *step)
{
	printf("%s:", step);
	for (int i = 0; i < 3; i++) {
		mqd_t q = open_queue(i);
		char buffer[16], all[200] = "";
		unsigned prio;
		ssize_t got;
		char kept[8][16];
		ssize_t lengths[8];
		int n = 0;
		while (n < 8 && (got = mq_receive(q, buffer, sizeof buffer, &prio)) >= 0) {
			memcpy(kept[n], buffer, (size_t)got);
			lengths[n++] = got;
			strncat(all, buffer, (size_t)got);
			strcat(all, ",");
		}
		for (int k = 0; k < n; k++)
			mq_send(q, kept[k], (size_t)lengths[k], 0);
		printf(" %c=[%s]", 'a' + i, all);
		mq_close(q);
	}
	printf("\n");
}

static void sent(const char *what, int result)
{
	if (result < 0)
		printf("%s: -1 %s\n", what, strerrorname_np(errno));
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	for (int i = 0; i < 3; i++)
		snprintf(names[i], sizeof names[i], "/%s-%c", argv[1], 'a' + i);

	mqd_t a = open_queue(0);
	sent("send a1", mq_send(a, "a1", 2, 0));
	close(a);
	mqd_t b = open_queue(1); /* the lowest free number: a's */
	printf("close then open: same number %d\n", a == b);
	sent("send b1", mq_send(b, "b1", 2, 0));
	show("after close");

	a = open_queue(0);
	mqd_t d = dup(a);
	sent("send a2 on dup", mq_send(d, "a2", 2, 0));
	dup2(b, d); /* d is b now */
	sent("send b2 on dup2", mq_send(d, "b2", 2, 0));
	dup3(a, d, O_CLOEXEC); /* and a again */
	sent("send a3 on dup3", mq_send(d, "a3", 2, 0));
	show("after dup");

	close_range((unsigned)d, (unsigned)d, 0);
	mqd_t c = open_queue(2);
	printf("close_range then open: same number %d\n", c == d);
	sent("send c1", mq_send(c, "c1", 2, 0));
	close_range((unsigned)c, (unsigned)c, CLOSE_RANGE_CLOEXEC); /* still open */
	sent("send c2 after CLOEXEC", mq_send(c, "c2", 2, 0));
	show("after close_range");

	int low = c > b ? c : b;
	closefrom(low);
	mqd_t again = open_queue(0);
	printf("closefrom then open: same number %d\n", again == low);
	sent("send a4", mq_send(again, "a4", 2, 0));
	show("after closefrom");

	fflush(stdout);
	pid_t child = fork();
	if (child == 0) {
		char buffer[16];
		unsigned prio;
		ssize_t got = mq_receive(again, buffer, sizeof buffer, &prio);
		printf("child received %.*s\n", (int)(got < 0 ? 0 : got), buffer);
		mq_close(again);
		mqd_t b_in_child = open_queue(1); /* again's number was not reused: a new one */
		sent("child send b3", mq_send(b_in_child, "b3", 2, 0));
		fflush(stdout);
		_exit(0);
	}
	waitpid(child, NULL, 0);
	sent("parent send a5", mq_send(again, "a5", 2, 0));
	show("after fork");

	for (int i = 0; i < 3; i++)
		mq_unlink(names[i]);
	return 0;
}
