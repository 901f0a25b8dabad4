/* placeholder */ typedef int cio__placeholder_multi;
