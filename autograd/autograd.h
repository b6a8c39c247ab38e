// One include for users of the autograd layer.
#pragma once
#include "autograd/error.h"
#include "autograd/flops.h"
#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/profiler.h"
#include "autograd/random.h"
#include "autograd/tape.h"
#include "autograd/tensor.h"
